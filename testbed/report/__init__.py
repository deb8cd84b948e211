"""Reading results: the console tables, report.html, compare, load and hardware pages, sweeps and the ladder."""
