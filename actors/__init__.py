"""Ray actors: device pools (many emulated devices each) and cloud servers."""
