"""The help sections of ``main.py --help``: every option, by section, in the order shown."""

MAIN_SECTIONS: dict[str, tuple[str, ...]] = {
    "general": ("O", "workspace", "preset", "device", "seed", "verbose"),
    "data": ("data_range", "part", "part2", "preload", "bg_img", "color_space", "bound", "scale", "offset", "fbg"),
    "training": ("iters", "ckpt", "lr", "lr_net", "lr_aud", "num_rays", "face_rays", "lips_rays", "error_map",
                 "warmup_step", "fp16", "bf16", "amb_aud_loss", "amb_eye_loss", "unc_loss", "lambda_amb", "mouth_sup",
                 "mouth_pretrain", "mouth_k", "mouth_spread", "mouth_teacher", "mouth_crossfit", "ind_dim",
                 "ind_num", "amb_dim",
                 "exp_eye", "fix_eye", "smooth_eye", "exp_upper", "train_camera", "max_nonfinite", "eval_interval",
                 "save_interval", "max_keep_ckpt", "ema_interval"),
    "rendering": ("cuda_ray", "grid_size", "max_steps", "num_steps", "upsample_steps", "update_extra_interval",
                  "grid_sample", "max_ray_batch", "dt_gamma", "min_near", "density_thresh", "smooth_path",
                  "smooth_path_window"),
    "torso": ("torso", "head_ckpt", "torso_shrink", "torso_pose_norm", "density_thresh_torso", "ind_dim_torso"),
    "lips": ("finetune_lips", "patch_size", "smooth_lips", "init_lips"),
    "audio": ("asr_model", "asr_weights", "aud", "att", "emb"),
    "evaluation": ("test", "test_train", "full_frame", "lpips_weights"),
    "live viewer and streaming": ("gui", "gui_host", "gui_port", "gui_max_side", "W", "H", "radius", "fovy",
                                  "asr", "asr_wav", "asr_play", "asr_save_feats", "fps", "l", "m", "r"),
    "not built (accepted for compatibility with the reference)": ("max_spp",),
}
