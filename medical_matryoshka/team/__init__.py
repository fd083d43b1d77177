"""Beyond one machine: the team's tracking server and study storage (server), the search over recipes whose
trials are DVC experiments (search)."""
