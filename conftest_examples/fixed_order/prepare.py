"""Runs first: run_order.txt lists it first."""
print("preparing the data")
