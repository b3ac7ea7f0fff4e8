"""The suite around the method: protocols, planner, executors, result store, reports."""
