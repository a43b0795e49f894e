"""Dense prediction over images and whole slides."""
