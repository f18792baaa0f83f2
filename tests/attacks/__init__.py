"""Tests of fedmist.attacks (a package so that its conftest has a unique module name)."""
