"""Tests of fedmist.audit (a package so that its conftest has a unique module name)."""
