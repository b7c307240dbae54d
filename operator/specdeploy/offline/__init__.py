"""``specdeploy simulate``: the policy in closed loop over load traces, side by side with static baselines and an
oracle with hindsight."""
