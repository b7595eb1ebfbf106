//! The feedparser side of the parsing benchmark: the venv with the pinned
//! feedparser, running `benches/feedparser_speed.py` on the same files, and
//! the comparison table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{load_average, BoxResult, Budget, FeedFigures, FeedFile};

/// The feedparser the comparison runs against (pinned: its speed changes
/// between releases).
const FEEDPARSER: &str = "feedparser==6.0.11";

/// feedparser's figures, as `benches/feedparser_speed.py` prints them.
pub(super) struct FeedparserFigures {
    json: serde_json::Value,
}

impl FeedparserFigures {
    fn num(&self, key: &str) -> f64 {
        self.json[key].as_f64().unwrap_or(f64::NAN)
    }
}

/// Runs the feedparser script in the bench venv (created on first use).
pub(super) fn feedparser(
    root: &Path,
    corpus: &Path,
    feeds: &[FeedFile],
    budget: &Budget,
) -> BoxResult<FeedparserFigures> {
    let python = venv_python(root)?;
    println!("feedparser: load average {}", load_average());
    let script = root.join("benches/feedparser_speed.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--secs")
        .arg(budget.secs.to_string())
        .arg("--root")
        .arg(corpus.join("feeds"));
    if let Some(n) = budget.iters {
        cmd.arg("--iters").arg(n.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    {
        let mut stdin = child.stdin.take().ok_or("no stdin for the script")?;
        for f in feeds {
            writeln!(stdin, "{}", f.path.display())?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable output of {}: {e}", script.display()))?;
    Ok(FeedparserFigures { json })
}

/// `target/bench-venv/bin/python` with the pinned feedparser, created (and
/// feedparser installed from PyPI) if it is not there yet.
fn venv_python(root: &Path) -> BoxResult<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python");
    let pinned = FEEDPARSER.trim_start_matches("feedparser==");
    let has_pinned = || {
        Command::new(&python)
            .args(["-c", "import feedparser; print(feedparser.__version__)"])
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == pinned
            })
    };
    if has_pinned() {
        return Ok(python);
    }
    println!(
        "feedparser: creating {} with {FEEDPARSER} …",
        venv.display()
    );
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            FEEDPARSER,
        ]),
        "pip install",
    )?;
    if !has_pinned() {
        return Err(format!("{FEEDPARSER} not importable in {}", venv.display()).into());
    }
    Ok(python)
}

fn run(cmd: &mut Command, what: &str) -> BoxResult<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

pub(super) fn compare(ours: &FeedFigures, fp: &FeedparserFigures) {
    println!(
        "feedparser {} (Python {}, in-process feedparser.parse(bytes)), {} files, {} passes in {:.2} s",
        fp.json["version"].as_str().unwrap_or("?"),
        fp.json["python"].as_str().unwrap_or("?"),
        fp.num("files"),
        fp.num("passes"),
        fp.num("seconds")
    );
    println!(
        "  {:.2} MB/s   {:.0} items/s   {:.0} files/s   ({} entries per pass, {} bozo, {} exceptions)",
        fp.num("mb_per_s"),
        fp.num("items_per_s"),
        fp.num("files_per_s"),
        fp.num("items_per_pass"),
        fp.num("bozo"),
        fp.num("exceptions")
    );
    for (key, title) in [
        ("slowest", "slowest 5 by time per MB"),
        ("largest_share", "largest 5 shares of the time"),
    ] {
        println!("  {title}:");
        for r in fp.json[key].as_array().into_iter().flatten() {
            println!(
                "    {:<58} {:>9.1} KB {:>9.2} MB/s {:>10.1} µs/pass {:>6.1}%",
                r["file"].as_str().unwrap_or("?"),
                r["bytes"].as_f64().unwrap_or(f64::NAN) / 1e3,
                r["mb_per_s"].as_f64().unwrap_or(f64::NAN),
                r["ms_per_pass"].as_f64().unwrap_or(f64::NAN) * 1e3,
                r["share"].as_f64().unwrap_or(f64::NAN) * 100.0
            );
        }
    }
    println!();
    let fp_cpu_mb = fp.num("cpu_mb_per_s");
    let fp_cpu_items = fp.num("cpu_items_per_s");
    println!(
        "{:<28} {:>10} {:>12} {:>10} {:>12}",
        "", "MB/s", "items/s", "files/s", "items/pass"
    );
    println!(
        "{:<28} {:>10.2} {:>12.0} {:>10.0} {:>12}",
        "ours (wall)", ours.mb_per_s, ours.items_per_s, ours.files_per_s, ours.items_per_pass
    );
    println!(
        "{:<28} {:>10.2} {:>12.0} {:>10.0} {:>12}",
        "feedparser (wall)",
        fp.num("mb_per_s"),
        fp.num("items_per_s"),
        fp.num("files_per_s"),
        fp.num("items_per_pass")
    );
    let ratio_mb = ours.mb_per_s / fp.num("mb_per_s");
    println!(
        "{:<28} {:>9.1}× {:>11.1}× {:>9.1}×",
        "ours / feedparser (wall)",
        ratio_mb,
        ours.items_per_s / fp.num("items_per_s"),
        ours.files_per_s / fp.num("files_per_s")
    );
    let mut cpu_ratio = None;
    if let (Some(mbs), Some(items)) = (ours.cpu_mb_per_s, ours.cpu_items_per_s) {
        if fp_cpu_mb.is_finite() {
            println!(
                "{:<28} {:>10.2} {:>12.0}",
                "ours (per CPU-second)", mbs, items
            );
            println!(
                "{:<28} {:>10.2} {:>12.0}",
                "feedparser (per CPU-second)", fp_cpu_mb, fp_cpu_items
            );
            println!(
                "{:<28} {:>9.1}× {:>11.1}×",
                "ours / feedparser (CPU)",
                mbs / fp_cpu_mb,
                items / fp_cpu_items
            );
            cpu_ratio = Some(mbs / fp_cpu_mb);
        }
    }
    let met = |r: f64| if r >= 30.0 { "met" } else { "not met" };
    println!(
        "target ≥ 30× feedparser's MB/s: {} by wall time ({ratio_mb:.1}×){}; we refused {} files, feedparser raised on {}",
        met(ratio_mb),
        cpu_ratio.map_or_else(String::new, |r| format!(", {} per CPU-second ({r:.1}×)", met(r))),
        ours.errors,
        fp.num("exceptions")
    );
}
