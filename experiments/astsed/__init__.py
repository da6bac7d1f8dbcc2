"""AST-SED: AST + frequency-wise Transformer encoder + local GRU decoder for SED."""
