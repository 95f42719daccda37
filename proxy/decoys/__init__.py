"""Decoy objects: realistic weight files to plant (forge), writing them and recording them (plant)."""
