"""Copycat CNN (Correia-Silva, Berriel, Badue, de Souza & Oliveira-Santos 2018, "Copycat CNN: Stealing Knowledge
by Persuading Confession with Random Non-Labeled Data", IJCNN).

Ask the victim about natural images of other domains (the paper's non-problem-domain, NPD, data: the thief's
pool), in a random order, and train the copy on the *hard* labels the victim gives them: the paper's victim answers
its top-1 class only, so the copy learns from labels even when the deployment would give probabilities (they are
cut to their argmax). The paper's optional second data set, a few problem-domain images also labelled by the
victim (NPD + PD), is ``problem_domain=True`` here: the seed set is asked first.
"""

from __future__ import annotations

from bastion.stealing.attacks._tools import draw, fit_on_labels
from bastion.stealing.base import ThiefView, register_steal_attack


@register_steal_attack("copycat", access="labels",
                       paper="Correia-Silva et al. 2018, Copycat CNN (IJCNN)")
def copycat(view: ThiefView, *, problem_domain: bool = False, batch_size: int = 500) -> None:
    """Label the pool (and, with ``problem_domain``, the seed set first) and train on the hard labels.

    Args:
        problem_domain: also ask the seed set's problem-domain images (the paper's NPD + PD copy); default NPD only.
        batch_size: queries per request.
    """
    view.propose(fit_on_labels(view))
    if problem_domain:
        seed = view.seed[draw(view.seed.shape[0], view.remaining, view.generator)]
        if seed.shape[0]:
            view.ask(seed)
    order = draw(view.pool.shape[0], view.remaining, view.generator)
    for idx in order.split(batch_size):
        view.ask(view.pool[idx.to(view.pool.device)])
