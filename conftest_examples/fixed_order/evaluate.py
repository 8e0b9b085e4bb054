"""Runs last: run_order.txt lists it after train.py."""
print("evaluating")
