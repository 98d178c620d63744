"""Running many panoramas: output staging and resume markers, fingerprints, and the local and Ray executors."""
