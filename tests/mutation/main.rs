//! The mutation engine, judged three ways: a table of pod shapes with the exact pod each must
//! become (`rules`), generated pods and nodes (`props`), and the 137 real-world pods of
//! `../shared/corpus/` (`corpus`); the last two by the oracle `support::oracle` (Kubernetes' node
//! selection as `warmpool::core::mutation::scheduling` models it).

mod corpus;
mod props;
mod rules;
