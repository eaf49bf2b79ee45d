"""The composition root: `transferlab serve | worker | migrate | experiment`. The only package that
may import both service/ and worker/."""
