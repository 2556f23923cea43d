"""Trace the package calls of one training step (issue #22): every call into `fastai_llr` between `before_batch` and
`after_batch` of the third batch, with `CyclicalLLR` + `LARC` on `synth_learner` (SGD with momentum and weight decay).

    python benchmarks/trace_step.py            # count and list, in call order
"""
import sys, os
from collections import Counter
from fastai.basics import *
from fastai_llr.all import *

PKG = os.path.dirname(sys.modules['fastai_llr'].__file__)

class Trace(Callback):
    "Record every call into the package during the batch `at`"
    order = -100
    def __init__(self, at=2): self.at,self.calls = at,[]
    def _prof(self, frame, event, arg):
        if event == 'call' and frame.f_code.co_filename.startswith(PKG):
            self.calls.append(f"{os.path.basename(frame.f_code.co_filename)[:-3]}.{frame.f_code.co_qualname}")
    def before_batch(self):
        if self.train_iter == self.at: sys.setprofile(self._prof)
    def after_batch(self): sys.setprofile(None)

if __name__ == '__main__':
    learn = synth_learner(opt_func=partial(SGD, mom=.9, wd=1e-2))
    tr = Trace()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-2, cbs=[CyclicalLLR(), LARC(), tr])
    calls = [c for c in tr.calls if '<' not in c.rpartition('.')[2]]  # comprehensions, generator expressions and lambdas are not calls of package functions
    print(f"{len(calls)} package function calls in one step ({len(tr.calls)} counting comprehensions and lambdas); {len(set(calls))} distinct functions")
    for c in calls: print(' ', c)
