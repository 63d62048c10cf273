"""Built-in synthetic datasets in nnU-Net's raw format (3D CT, 2D ultrasound), so everything runs
with no download."""
