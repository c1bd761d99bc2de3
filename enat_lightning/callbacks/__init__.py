"""Lightning callbacks: sample grids during training (evaluation callbacks live beside it)."""
