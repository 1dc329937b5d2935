MODULE in_out_manager
   !!======================================================================
   !!                    ***  MODULE  in_out_manager  ***
   !! toy_nemo :  the run control read from &namrun: experiment name, first
   !!             and last step, output and restart frequencies, restart file
   !!======================================================================
   !!   io_init : read &namrun (ref then cfg) and check it
   !!----------------------------------------------------------------------
   !! State owned here (written by io_init only, read-only elsewhere):
   !!   the namelist entries below
   !!----------------------------------------------------------------------
   USE par_kind, ONLY : lc
   USE lib_mpp , ONLY : lwp, numout, ctl_stop, ctl_nam, nam_open

   IMPLICIT NONE
   PRIVATE

   PUBLIC   io_init   ! called by nemogcm

   !                                               !!* namrun *
   CHARACTER(len=lc), PUBLIC ::   cn_exp           = 'TOY'       !: experiment name, prefix of the outputs
   INTEGER          , PUBLIC ::   nn_it000         = 1           !: first time step of this run
   INTEGER          , PUBLIC ::   nn_itend         = 219         !: last time step of this run
   INTEGER          , PUBLIC ::   nn_write         = 60          !: output every nn_write steps (0: none)
   INTEGER          , PUBLIC ::   nn_stock         = 0           !: restart every nn_stock steps and at the end (0: none)
   LOGICAL          , PUBLIC ::   ln_rstart        = .FALSE.     !: start from a restart file
   CHARACTER(len=lc), PUBLIC ::   cn_ocerst_in     = 'restart'   !: restart file read (.nc optional)
   CHARACTER(len=lc), PUBLIC ::   cn_ocerst_outdir = '.'         !: directory of the restart files written

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE io_init
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE io_init  ***
      !! ** Purpose :   read &namrun and refuse wrong values before any step
      !!------------------------------------------------------------------
      INTEGER ::   inum, ios
      CHARACTER(len=lc) ::   cmsg
      NAMELIST/namrun/ cn_exp, nn_it000, nn_itend, nn_write, nn_stock, ln_rstart, cn_ocerst_in, cn_ocerst_outdir
      !!------------------------------------------------------------------
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, namrun, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namrun', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, namrun, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namrun', 'namelist_cfg', inum )

      IF( LEN_TRIM(cn_exp) == 0 )   CALL ctl_stop( 'namrun: cn_exp is empty', ld_all=.TRUE. )
      IF( nn_it000 < 1 ) THEN
         WRITE(cmsg,'(a,i0,a)') 'namrun: nn_it000 = ', nn_it000, ' must be >= 1'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( nn_itend < nn_it000 ) THEN
         WRITE(cmsg,'(a,i0,a,i0)') 'namrun: nn_itend = ', nn_itend, ' must be >= nn_it000 = ', nn_it000
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( nn_write < 0 ) THEN
         WRITE(cmsg,'(a,i0,a)') 'namrun: nn_write = ', nn_write, ' must be >= 0'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( nn_stock < 0 ) THEN
         WRITE(cmsg,'(a,i0,a)') 'namrun: nn_stock = ', nn_stock, ' must be >= 0'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF

      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'io_init : run control (&namrun)'
         WRITE(numout,*) '~~~~~~~'
         WRITE(numout,'(a,a)' ) '   experiment name               cn_exp    = ', TRIM(cn_exp)
         WRITE(numout,'(a,i10)') '   first time step               nn_it000  = ', nn_it000
         WRITE(numout,'(a,i10)') '   last time step                nn_itend  = ', nn_itend
         WRITE(numout,'(a,i10)') '   output frequency              nn_write  = ', nn_write
         WRITE(numout,'(a,i10)') '   restart frequency             nn_stock  = ', nn_stock
         WRITE(numout,'(a,l10)') '   start from a restart          ln_rstart = ', ln_rstart
         IF( ln_rstart )   WRITE(numout,'(a,a)') '   restart file read          cn_ocerst_in = ', TRIM(cn_ocerst_in)
      ENDIF
   END SUBROUTINE io_init

   !!======================================================================
END MODULE in_out_manager
