//! Stage: image bytes on stdin → safetensors `input` [1,3,H,W] on stdout.
//! Options come from the manifest's `args` (see the library's `Options`).

use tally_guest::{fail, read_input, write_output, Tensor};
use tally_image_preprocess::{preprocess, Options};

fn main() {
    let opts = Options::from_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(2, &e));
    let input = read_input();
    let tensor = preprocess(&input, &opts).unwrap_or_else(|e| fail(1, &e));
    write_output(&Tensor::encode_all(&[tensor]));
}
