//! Graph passes: constant folding, algebraic simplification, common-subexpression
//! elimination and dead-code elimination.
