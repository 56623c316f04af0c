//! `netblame events dump FILE|DIR`: event logs as JSON Lines.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};

use crate::EventsArgs;

pub fn run(args: &EventsArgs) -> Result<()> {
    match &args.command {
        crate::EventsCommand::Dump { path } => dump(path),
    }
}

fn dump(path: &std::path::Path) -> Result<()> {
    let contents = netblame_instrument::read_events(path)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for event in &contents.events {
        serde_json::to_writer(&mut out, &event.to_json()).context("writing JSON")?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    for lost in &contents.lost {
        eprintln!("netblame: warning: {lost}");
    }
    if let Some(damage) = contents.damage {
        // Every complete event was printed; the damage is reported, not fatal.
        eprintln!(
            "netblame: warning: {damage}; printed the {} complete events",
            contents.events.len()
        );
    }
    Ok(())
}
