"""Reconciliation: finding the notifications D1 sent that never arrived (REFERENCE §6).

- sweep.py   the sweep (`manage.py reconcile`): which cards, claims, waves, stopping early
- repair.py  the workers' side: ask D1 about a card, apply what it says, count and log repairs

The task functions the workers run (refresh_card, refresh_cards) stay in tracker/tasks.py: their
import path is stored with every queued task.
"""
