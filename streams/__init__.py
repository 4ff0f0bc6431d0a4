"""healthmon stream processing: the Faust app, event contract, per-account state and scoring."""
