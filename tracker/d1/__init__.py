"""Everything that knows D1's wire formats and vocabulary. Nothing else speaks HTTP to D1."""
