//! `warmpool mutate`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
#[derive(Debug, clap::Args)]
pub struct Args {}
