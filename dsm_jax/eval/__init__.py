"""Evaluation shared by every method: `toy` (2-D densities: score errors, MMD, mode weights, grid KLs),
`images` (feature FID/KID and the classifier figures, Inception FID), `ood` (energies as out-of-distribution
scores), and the pieces they use (`metrics`, `fid`, `inception`, `feature_metrics`)."""
