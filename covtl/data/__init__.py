"""Data: the real datasets in their published layouts, the embedded synthetic default,
transforms per stage, the decoded-image cache, the split audit and the fetch command."""
