"""Paper studies: train every row of a study spec, evaluate it, write results beside the paper numbers (above training and evaluation)."""
