"""texplain: explain what a frozen image classifier has learned, in words."""
