"""Research workflow tools: bench, sweep, report, cost and export; they read what runs leave behind."""
