"""Generated data: brain phantoms, subjects warped from the MNI152 template, and the demo datasets
written in each real layout."""
