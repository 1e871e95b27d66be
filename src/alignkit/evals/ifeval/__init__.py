"""IFEval (Zhou et al. 2023) by the official protocol: the 25 instruction checkers
(:mod:`.checkers`), strict/loose scoring and metrics (:mod:`.scoring`), the offline text analyses they
need (:mod:`.text`) and ``alignkit eval ifeval`` (:mod:`.run`)."""
