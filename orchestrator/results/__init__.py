"""Score and show finished runs: truth and labels (labels, truth, real), stats, records, ranking (runs on disk
-> ranked rows), tables (its output formats), compare, report and htmlreport, architectures (families of models)."""
