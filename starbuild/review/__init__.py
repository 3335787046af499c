"""Review: takes, picks, rerolls, accepts, tiers and promotions.

Intent lives in ``starbuild.yaml``; decisions live in the lockfile with who made them and when.
``entries`` holds the lock-entry helpers the planner uses, ``jobs`` the hooks a build runs through,
``decisions`` the commands (pick, accept, reroll, promote) as library functions.
"""
