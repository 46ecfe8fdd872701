"""The library: the recordings store, who may see what, thumbnails."""
