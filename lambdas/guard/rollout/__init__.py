"""Fleet rollouts: many batches of one tenant in `batch_order`, as one execution."""
