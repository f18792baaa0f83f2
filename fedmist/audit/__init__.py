"""Audit a trained model: shadow models, attack scores, ROC metrics and the report files.

Kept import-light on purpose: ``fedmist.attacks`` imports ``fedmist.errors``, so this
package must not import the attacks back.
"""
