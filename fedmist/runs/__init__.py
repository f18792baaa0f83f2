"""Run directories: prepare, open, resume and load runs; the shipped recipes; the shadow trainer."""
