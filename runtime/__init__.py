"""edgenas.runtime: load, run and time artifacts on a device (numpy + runtime libraries only)."""
