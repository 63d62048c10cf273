"""product_units"""
