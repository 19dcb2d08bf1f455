"""Attacks: torchattacks adapters (zoo), robustness evaluation, its checks, grids, transfer.

Import the submodules directly (``from advlab.attacks.evaluate import evaluate_robustness``); this
package imports nothing heavy so that config checks stay fast.
"""
