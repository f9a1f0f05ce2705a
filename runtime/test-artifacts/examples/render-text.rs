//! Renders lines of text with DejaVu Sans into a PNG, the way the OCR tests
//! do: `cargo run -p tally-test-artifacts --example render-text -- OUT.png
//! "first line" "second line"`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, lines)) = args.split_first() else {
        eprintln!("usage: render-text OUT.png LINE...");
        std::process::exit(2);
    };
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    std::fs::write(out, tally_test_artifacts::text::render_png(&lines, 32.0))
        .unwrap_or_else(|e| panic!("{out}: {e}"));
}
