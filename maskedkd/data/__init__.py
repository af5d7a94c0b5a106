"""Data: the embedded image and sound sets, ImageFolder with the DeiT recipe, ESC-50."""
