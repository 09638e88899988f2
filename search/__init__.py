"""edgenas.search: what to build and how good it is."""
