"""l2l-ref: a reference implementation of "Learning to learn by gradient descent by gradient
descent" (Andrychowicz et al., NIPS 2016), in NumPy with autograd.

One module per idea of the paper:
    preprocessing  Appendix A's input map (and identity, and the released LogAndSign)
    lstm           the coordinatewise LSTM optimizer m(∇, h; φ) (Section 2.1)
    unroll         θ_{t+1} = θ_t + g_t and the meta-loss of Eq. 3, truncated
    meta_train     Adam on φ over epochs of unrolls, early stopping (Section 3)
    problems       the optimizees: quadratic, simple, mnist (MLP), cifar (conv net)
    baselines      SGD, RMSprop, Adam, NAG and their learning-rate tuning
    evaluate       the comparison on test problems
beside them, the fast versions checked against those definitions: fused (the first-order
meta-gradient by hand) and blocks (the cell's rows on the cores); and around them: datasets,
checkpoint (saved optimizers), presets (paper vs released code), plot, vectors and verify
(reference vectors for other implementations), cli.
"""
