"""Stand-ins that tests share: small objects with the interface a minigpt part expects."""


class FixedBatches:
    """A batch source for Trainer that gives the same (x, y) at every draw and counts the draws, as
    data.BatchSampler does, so its state survives a checkpoint."""

    def __init__(self, x, y):
        self.x, self.y, self.step = x, y, 0

    def next(self):
        self.step += 1
        return self.x, self.y

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, s):
        self.step = s["step"]
