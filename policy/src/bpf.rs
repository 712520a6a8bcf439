//! Classic BPF for seccomp filters: the instruction type, blocks of program built from a value
//! switch (a binary search over ranges), and the compact hex form the program travels in.
//!
//! Classic BPF has only forward jumps, and a conditional jump reaches at most 255 instructions
//! ahead (`jt`/`jf` are 8 bits). [`Block`] hides both: a block is a piece of program that can be
//! placed anywhere (every jump in it lands inside it, every path through it ends in a return),
//! so blocks nest without fix-ups, and a branch whose target is too far takes the unconditional
//! `JA`, whose offset is 32 bits, as a trampoline.

use std::collections::BTreeMap;
use std::mem::offset_of;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `BPF_LD | BPF_W | BPF_ABS`: load the 32-bit word at offset `k` of `seccomp_data`.
const LOAD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// `BPF_ALU | BPF_AND | BPF_K`: `A &= k`.
const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JA`: skip `k` instructions.
const JUMP: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `A == k`.
const JUMP_IF_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JGE | BPF_K`: `A >= k` (unsigned).
const JUMP_IF_AT_LEAST: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
/// `BPF_RET | BPF_K`: return the action `k`.
const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// The argument words below are the low halves of 64-bit values on a little-endian machine.
#[cfg(target_endian = "big")]
compile_error!("seccomp argument offsets assume a little-endian machine");

/// A 32-bit word of `struct seccomp_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// The syscall number.
    Nr,
    /// The `AUDIT_ARCH_*` of the calling convention.
    Arch,
    /// The low 32 bits of argument `i` (0-based).
    ArgLow(usize),
}

impl Field {
    fn offset(self) -> u32 {
        let offset = match self {
            Field::Nr => offset_of!(libc::seccomp_data, nr),
            Field::Arch => offset_of!(libc::seccomp_data, arch),
            Field::ArgLow(i) => offset_of!(libc::seccomp_data, args) + 8 * i,
        };
        offset as u32
    }
}

/// An instruction that always continues with the next one, so it can precede any block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Load a field into the accumulator.
    Load(Field),
    /// Keep only these bits of the accumulator.
    And(u32),
}

/// A piece of program that can be placed anywhere: every jump in it lands inside it and every
/// path through it ends in a return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block(Vec<BpfInstruction>);

impl Block {
    /// Returns the seccomp action `action` (a `SECCOMP_RET_*`, with its data).
    pub(crate) fn ret(action: u32) -> Block {
        Block(vec![instruction(RETURN, action)])
    }

    /// Runs `steps`, then `then`.
    pub(crate) fn after(steps: &[Step], then: Block) -> Block {
        let mut program: Vec<BpfInstruction> = steps
            .iter()
            .map(|step| match *step {
                Step::Load(field) => instruction(LOAD_WORD, field.offset()),
                Step::And(mask) => instruction(AND, mask),
            })
            .collect();
        program.extend(then.0);
        Block(program)
    }

    /// Chooses by the accumulator: a value in `cases` runs its block, any other `otherwise`.
    ///
    /// The values are cut into ranges that run the same block (adjacent values with equal
    /// blocks share one), and a balanced tree of `A >= start` tests finds the range: about
    /// log2(ranges) tests, one instruction per test and one block per range.
    pub(crate) fn switch(cases: impl IntoIterator<Item = (u32, Block)>, otherwise: Block) -> Block {
        let cases: BTreeMap<u32, Block> = cases.into_iter().collect();
        let mut ranges: Vec<(u32, Block)> = Vec::new();
        let mut push = |start: u64, block: &Block| {
            if ranges.last().is_none_or(|(_, last)| last != block) {
                let start = u32::try_from(start).expect("ranges start at u32 values");
                ranges.push((start, block.clone()));
            }
        };
        // The first value no range covers yet; u64 because it passes u32::MAX at the end.
        let mut uncovered = 0u64;
        for (value, block) in &cases {
            if u64::from(*value) > uncovered {
                push(uncovered, &otherwise);
            }
            push(u64::from(*value), block);
            uncovered = u64::from(*value) + 1;
        }
        if uncovered <= u64::from(u32::MAX) {
            push(uncovered, &otherwise);
        }
        search(&ranges)
    }

    /// The instructions, for `seccomp(SECCOMP_SET_MODE_FILTER)`.
    pub(crate) fn into_instructions(self) -> Vec<BpfInstruction> {
        self.0
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The tree over `ranges` (sorted by start, the first starting at 0, each running to the next).
fn search(ranges: &[(u32, Block)]) -> Block {
    match ranges {
        [(_, block)] => block.clone(),
        // One value between two equal ranges: a single equality test instead of two.
        [(_, outside), (value, inside), (next, after)]
            if outside == after && *next == value + 1 =>
        {
            branch(JUMP_IF_EQUAL, *value, inside.clone(), outside.clone())
        }
        _ => {
            let (below, above) = ranges.split_at(ranges.len() / 2);
            branch(JUMP_IF_AT_LEAST, above[0].0, search(above), search(below))
        }
    }
}

/// `if A <op> k { taken } else { not_taken }`. The shorter block is placed first, right after
/// the test, and the test jumps over it to the other; when even the shorter block is longer
/// than a conditional jump reaches, the test falls through to a `JA` over it instead.
fn branch(code: u16, k: u32, taken: Block, not_taken: Block) -> Block {
    let taken_first = taken.len() < not_taken.len();
    let (first, second) = if taken_first {
        (taken, not_taken)
    } else {
        (not_taken, taken)
    };
    let short = u8::try_from(first.len());
    // The offsets of the test's jumps to the first block and to the second.
    let (to_first, to_second) = match short {
        Ok(first_len) => (0, first_len),
        // Too far: skip the JA to reach the first block, fall into the JA to reach the second.
        Err(_) => (1, 0),
    };
    let (jt, jf) = if taken_first {
        (to_first, to_second)
    } else {
        (to_second, to_first)
    };
    let mut program = Vec::with_capacity(2 + first.len() + second.len());
    program.push(BpfInstruction { code, jt, jf, k });
    if short.is_err() {
        let over_first = u32::try_from(first.len()).expect("a program fits 32-bit offsets");
        program.push(instruction(JUMP, over_first));
    }
    program.extend(first.0);
    program.extend(second.0);
    Block(program)
}

fn instruction(code: u16, k: u32) -> BpfInstruction {
    BpfInstruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Why a hex-encoded BPF program could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BpfHexError {
    /// The text is not a whole number of 16-digit instructions.
    #[error(
        "a BPF program of {chars} characters is not a whole number of instructions; \
        expected 16 hex digits per instruction; hint: the plan was cut or edited"
    )]
    Length {
        /// The length of the text.
        chars: usize,
    },
    /// A character is not a hex digit.
    #[error(
        "the BPF program has {found:?} at character {at}, expected a hex digit; \
        hint: the plan was edited"
    )]
    NotHex {
        /// The 0-based position of the character.
        at: usize,
        /// The character.
        found: char,
    },
}

/// Serializes a program as one string of 16 hex digits per instruction: the fields of
/// `struct sock_filter` in order, each big-endian (`code` 4 digits, `jt` 2, `jf` 2, `k` 8).
/// `ld [4]` is `0020000000000004`. For `#[serde(with = "crate::bpf::hex_program")]`.
pub(crate) mod hex_program {
    use std::fmt::Write;

    use serde::{de, Deserialize, Deserializer, Serializer};

    use super::{BpfHexError, BpfInstruction};

    const DIGITS_PER_INSTRUCTION: usize = 16;

    pub(crate) fn serialize<S: Serializer>(
        program: &[BpfInstruction],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(program.len() * DIGITS_PER_INSTRUCTION);
        for i in program {
            write!(text, "{:04x}{:02x}{:02x}{:08x}", i.code, i.jt, i.jf, i.k)
                .expect("writing to a String cannot fail");
        }
        serializer.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<BpfInstruction>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(de::Error::custom)
    }

    pub(super) fn parse(text: &str) -> Result<Vec<BpfInstruction>, BpfHexError> {
        if let Some((at, found)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(BpfHexError::NotHex { at, found });
        }
        if !text.len().is_multiple_of(DIGITS_PER_INSTRUCTION) {
            return Err(BpfHexError::Length { chars: text.len() });
        }
        // Only hex digits remain, so every slice is on a char boundary and parses.
        let field = |digits: &str| u32::from_str_radix(digits, 16).expect("hex digits");
        Ok(text
            .as_bytes()
            .chunks(DIGITS_PER_INSTRUCTION)
            .map(|chunk| {
                let chunk = std::str::from_utf8(chunk).expect("ASCII hex digits");
                BpfInstruction {
                    code: field(&chunk[0..4]) as u16,
                    jt: field(&chunk[4..6]) as u8,
                    jf: field(&chunk[6..8]) as u8,
                    k: field(&chunk[8..16]),
                }
            })
            .collect())
    }
}

/// A classic-BPF interpreter for the instructions this module emits, and the kernel's load-time
/// checks, so programs are tested without a kernel.
#[cfg(test)]
pub(crate) mod interpreter {
    use super::*;

    /// `struct seccomp_data` as the kernel hands it to the filter.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct SeccompData {
        pub(crate) nr: i32,
        pub(crate) arch: u32,
        pub(crate) args: [u64; 6],
    }

    /// What one run of a program did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Run {
        /// The returned `SECCOMP_RET_*` value.
        pub(crate) action: u32,
        /// Instructions executed, the return included.
        pub(crate) steps: usize,
        /// Whether it loaded an argument. The kernel caches the action of a syscall number
        /// only when no argument is read on its way (`seccomp_cache_prepare`).
        pub(crate) read_args: bool,
    }

    /// Runs `program` on `data`. The loads use the offsets of the C layout written out (an
    /// oracle independent of [`Field::offset`]) for a little-endian machine.
    pub(crate) fn run(program: &[BpfInstruction], data: &SeccompData) -> Run {
        let (mut pc, mut acc, mut steps, mut read_args) = (0usize, 0u32, 0usize, false);
        loop {
            let insn = program[pc];
            pc += 1;
            steps += 1;
            let jump = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
            match insn.code {
                LOAD_WORD => {
                    acc = match insn.k {
                        0 => data.nr as u32,
                        4 => data.arch,
                        16..=63 => {
                            read_args = true;
                            let arg = data.args[(insn.k as usize - 16) / 8];
                            match insn.k % 8 {
                                0 => arg as u32,
                                4 => (arg >> 32) as u32,
                                _ => panic!("unaligned load at {}", insn.k),
                            }
                        }
                        k => panic!("load from offset {k}"),
                    }
                }
                AND => acc &= insn.k,
                JUMP => pc += insn.k as usize,
                JUMP_IF_EQUAL => pc += jump(acc == insn.k),
                JUMP_IF_AT_LEAST => pc += jump(acc >= insn.k),
                RETURN => {
                    return Run {
                        action: insn.k,
                        steps,
                        read_args,
                    }
                }
                code => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    /// Asserts what the kernel checks when the filter is installed (`bpf_check_classic`,
    /// `seccomp_check_filter`): a length of 1 to `BPF_MAXINSNS`, every jump inside the
    /// program, aligned loads inside `seccomp_data`, and a return last.
    pub(crate) fn check_like_the_kernel(program: &[BpfInstruction]) {
        assert!((1..=libc::BPF_MAXINSNS as usize).contains(&program.len()));
        for (pc, insn) in program.iter().enumerate() {
            let lands = |offset: usize| {
                assert!(
                    pc + 1 + offset < program.len(),
                    "jump out at {pc}: {insn:?}"
                )
            };
            match insn.code {
                LOAD_WORD => assert!(insn.k < 64 && insn.k % 4 == 0, "load at {pc}: {insn:?}"),
                AND | RETURN => {}
                JUMP => lands(insn.k as usize),
                JUMP_IF_EQUAL | JUMP_IF_AT_LEAST => {
                    lands(insn.jt.into());
                    lands(insn.jf.into());
                }
                _ => panic!("instruction seccomp refuses at {pc}: {insn:?}"),
            }
        }
        assert_eq!(program.last().map(|i| i.code), Some(RETURN));
    }
}

#[cfg(test)]
mod tests {
    use super::interpreter::{check_like_the_kernel, run, SeccompData};
    use super::*;

    /// Runs `block` with `value` in the accumulator and returns the action.
    fn switch_on(program: &[BpfInstruction], value: u32) -> u32 {
        let data = SeccompData {
            nr: value as i32,
            arch: 0,
            args: [0; 6],
        };
        run(program, &data).action
    }

    fn program(block: Block) -> Vec<BpfInstruction> {
        let program = Block::after(&[Step::Load(Field::Nr)], block).into_instructions();
        check_like_the_kernel(&program);
        program
    }

    #[test]
    fn switch_finds_every_case_and_nothing_else() {
        // Cases 10 apart with their own returns: 1200 ranges, so the tree's upper tests jump
        // over far more than 255 instructions.
        let cases: Vec<u32> = (1..=600).map(|i| i * 10).collect();
        let program = program(Block::switch(
            cases.iter().map(|&v| (v, Block::ret(v))),
            Block::ret(1),
        ));
        assert!(
            program.iter().any(|i| i.code == JUMP),
            "no long jump was needed"
        );
        for &v in &cases {
            assert_eq!(switch_on(&program, v), v);
            assert_eq!(switch_on(&program, v - 1), 1);
            assert_eq!(switch_on(&program, v + 1), 1);
        }
        assert_eq!(switch_on(&program, 0), 1);
        assert_eq!(switch_on(&program, u32::MAX), 1);
    }

    #[test]
    fn branch_reaches_blocks_beyond_a_conditional_jump_both_ways() {
        // `A &= u32::MAX` changes nothing: a block of any length that returns `id`.
        let block =
            |len: usize, id: u32| Block::after(&vec![Step::And(u32::MAX); len - 1], Block::ret(id));
        for (taken, not_taken) in [(300, 400), (400, 300), (1, 400), (400, 1), (256, 256)] {
            let program = program(branch(
                JUMP_IF_EQUAL,
                5,
                block(taken, 1),
                block(not_taken, 2),
            ));
            assert_eq!(switch_on(&program, 5), 1, "{taken} {not_taken}");
            assert_eq!(switch_on(&program, 6), 2, "{taken} {not_taken}");
        }
    }

    #[test]
    fn switch_covers_both_ends_of_the_range() {
        let program = program(Block::switch(
            [(0, Block::ret(7)), (u32::MAX, Block::ret(8))],
            Block::ret(9),
        ));
        assert_eq!(switch_on(&program, 0), 7);
        assert_eq!(switch_on(&program, 1), 9);
        assert_eq!(switch_on(&program, u32::MAX - 1), 9);
        assert_eq!(switch_on(&program, u32::MAX), 8);
    }

    #[test]
    fn switch_merges_neighbours_and_tests_a_lone_value_once() {
        let lone = Block::switch([(5, Block::ret(1))], Block::ret(2)).into_instructions();
        assert_eq!(lone.len(), 3, "{lone:?}");
        assert_eq!(lone[0].code, JUMP_IF_EQUAL);
        // 1..=3 run the same block: three ranges (below, 1..=3, above), two tests.
        let run_of_three = Block::switch((1..=3).map(|v| (v, Block::ret(1))), Block::ret(2));
        let run_of_three = program(run_of_three);
        assert_eq!(run_of_three.len(), 1 + 5, "{run_of_three:?}");
        for (value, action) in [(0, 2), (1, 1), (2, 1), (3, 1), (4, 2)] {
            assert_eq!(switch_on(&run_of_three, value), action, "{value}");
        }
    }

    #[test]
    fn steps_run_before_the_block() {
        let program = Block::after(
            &[Step::Load(Field::ArgLow(2)), Step::And(0xff)],
            Block::switch([(0x34, Block::ret(1))], Block::ret(2)),
        )
        .into_instructions();
        check_like_the_kernel(&program);
        let data = |arg: u64| {
            let mut args = [0; 6];
            args[2] = arg;
            SeccompData {
                nr: 0,
                arch: 0,
                args,
            }
        };
        assert_eq!(run(&program, &data(0x1234)).action, 1);
        assert_eq!(run(&program, &data(0x1235)).action, 2);
        assert!(run(&program, &data(0)).read_args);
    }

    #[test]
    fn field_offsets_match_the_c_layout() {
        assert_eq!(Field::Nr.offset(), 0);
        assert_eq!(Field::Arch.offset(), 4);
        assert_eq!(Field::ArgLow(0).offset(), 16);
        assert_eq!(Field::ArgLow(5).offset(), 56);
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Wrapped {
        #[serde(with = "hex_program")]
        bpf: Vec<BpfInstruction>,
    }

    #[test]
    fn hex_round_trips_and_reads_like_the_struct() {
        let bpf = vec![
            instruction(LOAD_WORD, 4),
            BpfInstruction {
                code: 0xfedc,
                jt: 0xba,
                jf: 0x98,
                k: 0x7654_3210,
            },
            instruction(RETURN, u32::MAX),
        ];
        let wrapped = Wrapped { bpf };
        let json = serde_json::to_string(&wrapped).unwrap();
        assert_eq!(
            json,
            r#"{"bpf":"0020000000000004fedcba987654321000060000ffffffff"}"#
        );
        assert_eq!(serde_json::from_str::<Wrapped>(&json).unwrap(), wrapped);
        let empty: Wrapped = serde_json::from_str(r#"{"bpf":""}"#).unwrap();
        assert!(empty.bpf.is_empty());
        let upper: Wrapped =
            serde_json::from_str(r#"{"bpf":"0020000000000004FEDCBA9876543210"}"#).unwrap();
        assert_eq!(upper.bpf[..], wrapped.bpf[..2]);
    }

    #[test]
    fn hex_that_is_not_a_program_is_refused() {
        use hex_program::parse;
        assert_eq!(parse("0020"), Err(BpfHexError::Length { chars: 4 }));
        assert_eq!(
            parse("002000000000000g"),
            Err(BpfHexError::NotHex { at: 15, found: 'g' })
        );
        // from_str_radix alone would take a sign.
        assert_eq!(
            parse("+020000000000004"),
            Err(BpfHexError::NotHex { at: 0, found: '+' })
        );
        assert_eq!(
            parse("00200000000000é"),
            Err(BpfHexError::NotHex {
                at: 14, found: 'é'
            })
        );
        let err = serde_json::from_str::<Wrapped>(r#"{"bpf":"00"}"#).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
    }

    #[test]
    fn every_error_variant_formats() {
        assert_eq!(
            BpfHexError::Length { chars: 4 }.to_string(),
            "a BPF program of 4 characters is not a whole number of instructions; expected 16 \
            hex digits per instruction; hint: the plan was cut or edited"
        );
        assert_eq!(
            BpfHexError::NotHex { at: 3, found: 'x' }.to_string(),
            "the BPF program has 'x' at character 3, expected a hex digit; hint: the plan was \
            edited"
        );
    }
}
