"""Tools built on the library: evaluate, predict, convert, prepare data."""
