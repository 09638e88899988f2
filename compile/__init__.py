"""edgenas.compile: candidate -> deployable artifacts."""
