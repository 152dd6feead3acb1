"""Score and show finished runs: truth and labels (labels, truth, real), stats, ranking (runs on disk
-> results.csv/.md and the plot), compare, report and htmlreport, architectures (families of models)."""
