//! The `livestrom` CLI (lead-owned; subcommands wired as modules land).

fn main() {}
