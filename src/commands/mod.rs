//! One module per subcommand: arguments and the shell that runs them.

pub mod reconcile;
