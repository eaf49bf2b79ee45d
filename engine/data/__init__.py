"""The parts behind engine.datasets (import from there): file readers, downloads, the decode-once
cache and seeded stratified sampling."""
