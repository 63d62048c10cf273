"""Converters: a public dataset's own download layout -> nnU-Net's raw format (AMOS 2022 CT,
ISIC 2018, Kvasir-SEG, BUSI)."""
