//! Frees a model's batch dimension, so that `--max-batch-size` works with a model as
//! its authors export it. Background-removal models are usually exported for one
//! image: their input and outputs say `[1, 3, h, w]` and `[1, 1, h, w]`, although
//! nothing inside them depends on the batch (ISNet's resizes take their sizes from
//! their inputs' shapes). ONNX Runtime then refuses a batch of two.
//!
//! [`free`] rewrites the model's protocol buffer: the first dimension of every graph
//! input and output fixed at 1 becomes the named dimension `batch`, and the shapes the
//! exporter recorded for intermediate values (which name batch 1 too) are dropped for
//! ONNX Runtime to infer again. Everything else is copied byte for byte, fields this
//! code does not know included, so nothing of the model is lost in a round trip.
//! Whether the graph really has no batch of 1 inside is for a run to tell:
//! [`crate::model::Model::load`] checks a batch against a run alone before using it.

use std::collections::HashSet;

/// Field numbers of `onnx.proto` (ONNX IR 3 and later) that the rewrite follows.
mod onnx {
    pub const MODEL_GRAPH: u64 = 7;
    pub const GRAPH_INITIALIZER: u64 = 5;
    pub const GRAPH_INPUT: u64 = 11;
    pub const GRAPH_OUTPUT: u64 = 12;
    pub const GRAPH_VALUE_INFO: u64 = 13;
    pub const TENSOR_NAME: u64 = 8;
    pub const TENSOR_DATA_LOCATION: u64 = 14;
    pub const TENSOR_DATA_LOCATION_EXTERNAL: u64 = 1;
    pub const VALUE_INFO_NAME: u64 = 1;
    pub const VALUE_INFO_TYPE: u64 = 2;
    pub const TYPE_TENSOR: u64 = 1;
    pub const TENSOR_TYPE_SHAPE: u64 = 2;
    pub const SHAPE_DIM: u64 = 1;
    pub const DIM_VALUE: u64 = 1;
    pub const DIM_PARAM: u64 = 2;
}

/// The name the freed dimension gets.
pub const BATCH_DIMENSION: &str = "batch";

/// Why a model's batch dimension could not be freed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CannotFree {
    #[error("the model is not a valid protocol buffer: {0}")]
    Malformed(#[from] Malformed),
    #[error("the model has no graph")]
    NoGraph,
    #[error("the model keeps its weights in external files, which a model loaded from memory cannot find")]
    ExternalData,
}

/// Where the protocol buffer's encoding breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("it ends inside a field, at byte {0}")]
    Truncated(usize),
    #[error("a varint at byte {0} runs past ten bytes")]
    LongVarint(usize),
    #[error("field {field} at byte {at} has wire type {wire_type}, which ONNX does not use")]
    WireType { field: u64, wire_type: u64, at: usize },
}

/// The model with its batch dimension freed, or `None` where no input or output fixes
/// it at 1 (a dynamic batch already, or a batch fixed at another size).
pub fn free(model: &[u8]) -> Result<Option<Vec<u8>>, CannotFree> {
    let graph = first_message(model, onnx::MODEL_GRAPH)?.ok_or(CannotFree::NoGraph)?;
    let initializers = initializer_names(graph)?;

    let mut freed = 0;
    let graph = rewrite(graph, |field| {
        let Payload::Bytes(value_info) = field.payload else { return Ok(Edit::Keep) };
        let is_batched = match field.number {
            onnx::GRAPH_INPUT => !initializers.contains(value_name(value_info)?),
            onnx::GRAPH_OUTPUT => true,
            // Recorded with batch 1; left out, they are inferred again at load.
            onnx::GRAPH_VALUE_INFO => return Ok(Edit::Drop),
            _ => return Ok(Edit::Keep),
        };
        if !is_batched {
            return Ok(Edit::Keep);
        }
        let path = [onnx::VALUE_INFO_TYPE, onnx::TYPE_TENSOR, onnx::TENSOR_TYPE_SHAPE, onnx::SHAPE_DIM];
        Ok(match edit_first(value_info, &path, free_dimension)? {
            Some(value_info) => {
                freed += 1;
                Edit::Replace(value_info)
            }
            None => Edit::Keep,
        })
    })?;
    if freed == 0 {
        return Ok(None);
    }
    Ok(Some(replace_first(model, onnx::MODEL_GRAPH, graph)?))
}

/// A `TensorShapeProto.Dimension` of value 1 as the dimension `batch`, its denotation
/// kept; `None` for any other dimension.
fn free_dimension(dimension: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
    let mut is_one = false;
    for field in fields(dimension) {
        let field = field?;
        match (field.number, field.payload) {
            (onnx::DIM_VALUE, Payload::Varint(1)) => is_one = true,
            (onnx::DIM_VALUE | onnx::DIM_PARAM, _) => return Ok(None),
            _ => {}
        }
    }
    if !is_one {
        return Ok(None);
    }
    let mut freed =
        rewrite(dimension, |field| Ok(if field.number == onnx::DIM_VALUE { Edit::Drop } else { Edit::Keep }))?;
    freed.extend(length_delimited(onnx::DIM_PARAM, BATCH_DIMENSION.as_bytes()));
    Ok(Some(freed))
}

/// The names of the graph's initializers (which older exporters list among its inputs
/// too, and which have no batch); refuses weights kept in external files.
fn initializer_names(graph: &[u8]) -> Result<HashSet<&[u8]>, CannotFree> {
    let mut names = HashSet::new();
    for field in fields(graph) {
        let field = field?;
        let (onnx::GRAPH_INITIALIZER, Payload::Bytes(tensor)) = (field.number, field.payload) else { continue };
        for field in fields(tensor) {
            let field = field?;
            match (field.number, field.payload) {
                (onnx::TENSOR_NAME, Payload::Bytes(name)) => {
                    names.insert(name);
                }
                (onnx::TENSOR_DATA_LOCATION, Payload::Varint(onnx::TENSOR_DATA_LOCATION_EXTERNAL)) => {
                    return Err(CannotFree::ExternalData);
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

fn value_name(value_info: &[u8]) -> Result<&[u8], Malformed> {
    Ok(first_message(value_info, onnx::VALUE_INFO_NAME)?.unwrap_or_default())
}

/// The payload of the first length-delimited field `number` of `message`.
fn first_message(message: &[u8], number: u64) -> Result<Option<&[u8]>, Malformed> {
    for field in fields(message) {
        if let Field { number: found, payload: Payload::Bytes(bytes), .. } = field?
            && found == number
        {
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// A message's new encoding, or `None` to keep it.
type MessageEdit = fn(&[u8]) -> Result<Option<Vec<u8>>, Malformed>;

/// Follows `path` (a field number a level) through the first field of each number,
/// and rewrites the message at its end with `leaf`; `None` where the path is not there
/// or `leaf` changes nothing.
fn edit_first(message: &[u8], path: &[u64], leaf: MessageEdit) -> Result<Option<Vec<u8>>, Malformed> {
    let Some((&number, rest)) = path.split_first() else { return leaf(message) };
    let Some(inner) = first_message(message, number)? else { return Ok(None) };
    let Some(edited) = edit_first(inner, rest, leaf)? else { return Ok(None) };
    Ok(Some(replace_first(message, number, edited)?))
}

/// `message` with the payload of its first length-delimited field `number` (the one
/// [`first_message`] reads) replaced by `payload`.
fn replace_first(message: &[u8], number: u64, payload: Vec<u8>) -> Result<Vec<u8>, Malformed> {
    let mut payload = Some(payload);
    rewrite(message, |field| {
        Ok(match (field.number == number && matches!(field.payload, Payload::Bytes(_)), payload.take()) {
            (true, Some(replacement)) => Edit::Replace(replacement),
            (_, untouched) => {
                payload = untouched;
                Edit::Keep
            }
        })
    })
}

// --- the wire format ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload<'a> {
    Varint(u64),
    /// A 32- or 64-bit fixed-width value, as encoded.
    Fixed,
    Bytes(&'a [u8]),
}

#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u64,
    /// The field's key as encoded, to write it back unchanged.
    key: &'a [u8],
    /// The whole field: key and payload.
    encoded: &'a [u8],
    payload: Payload<'a>,
}

/// What [`rewrite`] does with a field.
enum Edit {
    Keep,
    Drop,
    /// The field's payload becomes this (a length-delimited field's bytes).
    Replace(Vec<u8>),
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_BYTES: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// The fields of one message, in order.
fn fields(message: &[u8]) -> impl Iterator<Item = Result<Field<'_>, Malformed>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= message.len() {
            return None;
        }
        let field = read_field(message, at);
        at = match &field {
            Ok(field) => at + field.encoded.len(),
            Err(_) => message.len(), // one error, then the end
        };
        Some(field)
    })
}

fn read_field(message: &[u8], start: usize) -> Result<Field<'_>, Malformed> {
    let (key, after_key) = read_varint(message, start)?;
    let (number, wire_type) = (key >> 3, key & 7);
    let (payload, end) = match wire_type {
        WIRE_VARINT => {
            let (value, end) = read_varint(message, after_key)?;
            (Payload::Varint(value), end)
        }
        WIRE_FIXED64 | WIRE_FIXED32 => {
            let width = if wire_type == WIRE_FIXED64 { 8 } else { 4 };
            (Payload::Fixed, after_key + width)
        }
        WIRE_BYTES => {
            let (length, after_length) = read_varint(message, after_key)?;
            let end = usize::try_from(length)
                .ok()
                .and_then(|length| after_length.checked_add(length))
                .ok_or(Malformed::Truncated(after_length))?;
            (Payload::Bytes(message.get(after_length..end).ok_or(Malformed::Truncated(after_length))?), end)
        }
        _ => return Err(Malformed::WireType { field: number, wire_type, at: start }),
    };
    let encoded = message.get(start..end).ok_or(Malformed::Truncated(start))?;
    Ok(Field { number, key: &message[start..after_key], encoded, payload })
}

fn read_varint(bytes: &[u8], start: usize) -> Result<(u64, usize), Malformed> {
    let mut value = 0u64;
    for (index, &byte) in bytes.get(start..).unwrap_or_default().iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, start + index + 1));
        }
    }
    if bytes.len() >= start + 10 { Err(Malformed::LongVarint(start)) } else { Err(Malformed::Truncated(start)) }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    write_varint(&mut out, (number << 3) | WIRE_BYTES);
    write_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// `message` with each field kept, dropped or given a new payload by `edit`.
fn rewrite(message: &[u8], mut edit: impl FnMut(&Field) -> Result<Edit, Malformed>) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::with_capacity(message.len());
    for field in fields(message) {
        let field = field?;
        match edit(&field)? {
            Edit::Keep => out.extend_from_slice(field.encoded),
            Edit::Drop => {}
            Edit::Replace(payload) => {
                out.extend_from_slice(field.key);
                write_varint(&mut out, payload.len() as u64);
                out.extend_from_slice(&payload);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_field(number: u64, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, number << 3);
        write_varint(&mut out, value);
        out
    }

    fn message(number: u64, parts: &[Vec<u8>]) -> Vec<u8> {
        length_delimited(number, &parts.concat())
    }

    /// A `ValueInfoProto` field `number` named `name`, of shape `dims` (a dimension a
    /// value, or a name where `None`).
    fn value_info(number: u64, name: &str, dims: &[Option<u64>]) -> Vec<u8> {
        let dims: Vec<Vec<u8>> = dims
            .iter()
            .map(|dim| match dim {
                Some(value) => message(onnx::SHAPE_DIM, &[varint_field(onnx::DIM_VALUE, *value)]),
                None => message(onnx::SHAPE_DIM, &[length_delimited(onnx::DIM_PARAM, b"n")]),
            })
            .collect();
        let shape = message(onnx::TENSOR_TYPE_SHAPE, &dims);
        let tensor_type = message(onnx::TYPE_TENSOR, &[varint_field(1, 1), shape]);
        let ty = message(onnx::VALUE_INFO_TYPE, &[tensor_type]);
        message(number, &[length_delimited(onnx::VALUE_INFO_NAME, name.as_bytes()), ty])
    }

    fn initializer(name: &str, external: bool) -> Vec<u8> {
        let mut parts = vec![length_delimited(onnx::TENSOR_NAME, name.as_bytes()), varint_field(1, 1)];
        if external {
            parts.push(varint_field(onnx::TENSOR_DATA_LOCATION, onnx::TENSOR_DATA_LOCATION_EXTERNAL));
        }
        message(onnx::GRAPH_INITIALIZER, &parts)
    }

    /// A model: an IR version, an unknown field, and a graph of `graph`'s fields.
    fn model(graph: &[Vec<u8>]) -> Vec<u8> {
        [varint_field(1, 8), length_delimited(999, b"kept as it is"), message(onnx::MODEL_GRAPH, graph)].concat()
    }

    /// The shape of the input or output named `name`, as `free` left it.
    fn dims_of(model: &[u8], name: &str) -> Vec<String> {
        let graph = first_message(model, onnx::MODEL_GRAPH).unwrap().unwrap();
        let value = fields(graph)
            .map(Result::unwrap)
            .filter_map(|field| match field.payload {
                Payload::Bytes(bytes) if [onnx::GRAPH_INPUT, onnx::GRAPH_OUTPUT].contains(&field.number) => Some(bytes),
                _ => None,
            })
            .find(|value| value_name(value).unwrap() == name.as_bytes())
            .unwrap();
        let mut shape = value;
        for number in [onnx::VALUE_INFO_TYPE, onnx::TYPE_TENSOR, onnx::TENSOR_TYPE_SHAPE] {
            shape = first_message(shape, number).unwrap().unwrap();
        }
        fields(shape)
            .map(Result::unwrap)
            .map(|dim| {
                let Payload::Bytes(dim) = dim.payload else { panic!("a dimension is a message") };
                match fields(dim).next().unwrap().unwrap().payload {
                    Payload::Varint(value) => value.to_string(),
                    Payload::Bytes(name) => String::from_utf8(name.to_vec()).unwrap(),
                    Payload::Fixed => panic!("no fixed-width dimension"),
                }
            })
            .collect()
    }

    #[test]
    fn inputs_and_outputs_fixed_at_one_get_a_named_batch_and_recorded_shapes_go() {
        let original = model(&[
            initializer("weight", false),
            value_info(onnx::GRAPH_INPUT, "image", &[Some(1), Some(3), Some(64), Some(64)]),
            value_info(onnx::GRAPH_INPUT, "weight", &[Some(1), Some(3)]),
            value_info(onnx::GRAPH_OUTPUT, "mask", &[Some(1), Some(1), Some(64), Some(64)]),
            value_info(onnx::GRAPH_OUTPUT, "side", &[None, Some(1)]),
            value_info(onnx::GRAPH_VALUE_INFO, "inside", &[Some(1), Some(8)]),
        ]);
        let freed = free(&original).unwrap().expect("the image's batch is fixed at 1");
        assert_eq!(dims_of(&freed, "image"), ["batch", "3", "64", "64"]);
        assert_eq!(dims_of(&freed, "mask"), ["batch", "1", "64", "64"]);
        assert_eq!(dims_of(&freed, "weight"), ["1", "3"], "an initializer listed as an input has no batch");
        assert_eq!(dims_of(&freed, "side"), ["n", "1"], "a dimension already named stays");
        let graph = first_message(&freed, onnx::MODEL_GRAPH).unwrap().unwrap();
        assert!(fields(graph).all(|field| field.unwrap().number != onnx::GRAPH_VALUE_INFO));
        assert!(freed.windows(13).any(|window| window == b"kept as it is"), "unknown fields survive");
        assert!(free(&freed).unwrap().is_none(), "freed once, there is nothing left to free");
    }

    #[test]
    fn a_dynamic_batch_or_one_fixed_above_one_is_left_alone() {
        let dynamic = model(&[value_info(onnx::GRAPH_INPUT, "image", &[None, Some(3), Some(8), Some(8)])]);
        assert_eq!(free(&dynamic), Ok(None));
        let four = model(&[value_info(onnx::GRAPH_INPUT, "image", &[Some(4), Some(3), Some(8), Some(8)])]);
        assert_eq!(free(&four), Ok(None));
    }

    #[test]
    fn broken_or_unloadable_models_are_refused_with_the_reason() {
        let whole = model(&[value_info(onnx::GRAPH_INPUT, "image", &[Some(1), Some(3)])]);
        for cut in [1, whole.len() / 2, whole.len() - 1] {
            assert!(matches!(free(&whole[..cut]), Err(CannotFree::Malformed(_))), "cut at {cut}");
        }
        assert_eq!(free(&[0xff; 12]), Err(CannotFree::Malformed(Malformed::LongVarint(0))));
        assert_eq!(free(&[0x0b]), Err(CannotFree::Malformed(Malformed::WireType { field: 1, wire_type: 3, at: 0 })));
        assert_eq!(free(&varint_field(1, 8)), Err(CannotFree::NoGraph));
        let external = model(&[initializer("weight", true), value_info(onnx::GRAPH_INPUT, "image", &[Some(1)])]);
        assert_eq!(free(&external), Err(CannotFree::ExternalData));
    }

    /// A model file is the user's, fetched from a URL: bytes changed anywhere in a valid
    /// model give a freed model or an error, never a panic.
    #[test]
    fn any_corruption_of_a_model_is_an_error_or_a_model_never_a_panic() {
        let original = model(&[
            initializer("weight", false),
            value_info(onnx::GRAPH_INPUT, "image", &[Some(1), Some(3), Some(64), Some(64)]),
            value_info(onnx::GRAPH_OUTPUT, "mask", &[Some(1), Some(1), Some(64), Some(64)]),
        ]);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut freed, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut corrupted = original.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % corrupted.len() as u64) as usize;
                corrupted[at] = next() as u8;
            }
            let cut = corrupted.len() - (next() % 4) as usize;
            match free(&corrupted[..cut]) {
                Ok(_) => freed += 1,
                Err(_) => refused += 1,
            }
        }
        assert!(freed > 0 && refused > 0, "{freed} freed or left alone, {refused} refused");
    }

    #[test]
    fn varints_round_trip_and_lengths_past_the_message_are_refused() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(read_varint(&out, 0), Ok((value, out.len())));
        }
        let mut lying = Vec::new();
        write_varint(&mut lying, (7 << 3) | WIRE_BYTES);
        write_varint(&mut lying, u64::MAX);
        assert!(matches!(free(&lying), Err(CannotFree::Malformed(Malformed::Truncated(_)))));
    }
}
